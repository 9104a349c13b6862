"""Annotate: teach pair -> pair search what "similar change" means (ANNEAL active learning)."""

from __future__ import annotations

import os
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from textitsr import app_support as ui
from textitsr.active.anneal import STRATEGIES, SelectionConfig
from textitsr.active.rounds import AnnealSession
from textitsr.errors import TextITSRError

ENV_ANNOTATIONS = "TEXTITSR_ANNOTATIONS"
STRATEGY_NAMES = {
    "mgue": "MGUE + clustering",
    "bcgue": "BCGUE + clustering",
    "uncertainty": "uncertainty only",
    "random": "random",
}

ui.page_setup("Annotate")
st.title("Annotate")
st.caption(
    "Answer whether two archive items show a similar change. The pairs asked are the ones the "
    "current metric space is least sure about (ANNEAL); **Update model** fine-tunes it on your answers."
)

service = ui.service_or_stop()
config = ui.load_config()
workdir = Path(os.environ.get(ENV_ANNOTATIONS) or config.store.parent / f"{config.store.name}-annotations")
if config.store.name == "store":
    workdir = Path(os.environ.get(ENV_ANNOTATIONS) or config.store.parent / "annotations")

with st.sidebar:
    strategy = st.selectbox("Selection", STRATEGIES, format_func=STRATEGY_NAMES.get, key="annotate-strategy")
    batch = st.slider("Pairs per round", 2, 30, 8, key="annotate-batch")
    who = st.text_input("Your name (recorded with each answer)", value="analyst", key="annotate-who")
    st.caption(f"Workspace: `{workdir}`")

try:
    session = AnnealSession(
        config.store, workdir, config.checkpoint, SelectionConfig(strategy=strategy, batch=batch)
    )
except TextITSRError as err:
    st.error(f"Cannot annotate this archive: {err}")
    st.stop()

prog = session.progress()
pending = session.log.pending()
top = st.columns([3, 1, 1])
top[0].progress(
    prog["answered"] / prog["batch"] if prog["batch"] else 0.0,
    text=f"Round {prog['round']}: {prog['answered']} of {prog['batch']} answered",
)
top[1].metric("Labels", prog["labels"])
top[2].metric("Round", prog["round"])


def show_item(col, pair_id: str, title: str) -> None:
    record = service.pair(pair_id)
    before, after = service.thumbnails(pair_id)
    with col:
        st.markdown(f"**{title}** · `{pair_id}`")
        left, right = st.columns(2)
        left.image(before, caption="before", width="stretch")
        right.image(after, caption="after", width="stretch")
        if record.get("captions"):
            st.caption(f"“{record['captions'][0]}”")


if pending:
    a, b = pending[0]
    st.subheader(f"Is the change in A similar to the change in B?  ({len(pending)} left in this round)")
    with ui.show_errors("The item pair"):
        col_a, col_b = st.columns(2, gap="large")
        show_item(col_a, a, "A")
        show_item(col_b, b, "B")
    buttons = st.columns(3)
    for col, label, kind in zip(
        buttons, ("similar", "dissimilar", "skip"), ("primary", "secondary", "tertiary"), strict=True
    ):
        if col.button(label.capitalize(), key=f"annotate-{label}", type=kind, width="stretch"):
            session.answer(a, b, label, who=who.strip() or "analyst")
            st.rerun()
else:
    st.info(
        "No questions pending."
        + (
            " Update the model on your answers, or start the next round."
            if prog["labels"]
            else " Start a round to get the first questions."
        )
    )
    if st.button(f"Start round {prog['round'] + 1}", key="annotate-start", type="primary"):
        with st.spinner("Selecting informative pairs..."):
            try:
                session.next_batch()
            except TextITSRError as err:
                st.error(str(err))
                st.stop()
        st.rerun()

st.divider()
st.subheader("Model")
if st.button(
    "Update model",
    key="annotate-update",
    disabled=prog["labels"] == 0,
    help="Fine-tune the pair head on all answers so far and re-embed the archive.",
):
    bar = st.progress(0.0, text="starting")
    try:
        metrics = session.update_model(lambda f, msg: bar.progress(min(max(f, 0.0), 1.0), text=msg))
    except TextITSRError as err:
        st.error(f"Update failed: {err}")
    else:
        st.success(
            f"Fine-tuned on {int(metrics['n_labels'])} labels; re-embedded archive in "
            f"`{session.paths.store}` (search it with {ui.ENV_STORE}={session.paths.store})."
        )

with ui.show_errors("The metric over rounds"):
    history = session.history()
    names = {
        "pair_map20": "pair→pair mAP@20 (change type)",
        "text_mR": "text↔pair mR",
        "label_agreement": "agreement with your labels",
    }
    fig = go.Figure()
    for key, name in names.items():
        pts = [(h["round"], h[key]) for h in history if key in h]
        if pts:
            fig.add_scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=name)
    fig.update_layout(
        xaxis_title="round (0 = base model)",
        yaxis_title="%",
        height=360,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        title="Evaluation over rounds",
    )
    st.plotly_chart(fig, key="annotate-history", width="stretch")
