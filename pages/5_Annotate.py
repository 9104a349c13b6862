"""Annotate: teach pair -> pair search what "similar change" means (ANNEAL active learning)."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from textitsr.app import anneal, archives, services, widgets
from textitsr.app.config import load_config
from textitsr.errors import TextITSRError
from textitsr.escape import markdown_code, markdown_text

UPDATED_KEY = "annotate-updated"
STRATEGY_NAMES = {
    "mgue": "MGUE + clustering",
    "bcgue": "BCGUE + clustering",
    "uncertainty": "uncertainty only",
    "random": "random",
}

widgets.page_setup("Annotate")
st.title("Annotate")
st.caption(
    "Answer whether two archive items show a similar change. The pairs asked are the ones the "
    "current metric space is least sure about (ANNEAL); **Update model** fine-tunes it on your answers."
)

service = services.service_or_stop(base=True)  # the items asked about are the base archive's pairs
config = load_config()
workdir = config.annotations_dir

with st.sidebar:
    strategy = st.selectbox("Selection", anneal.STRATEGIES, format_func=STRATEGY_NAMES.get,
                            key="annotate-strategy")
    batch = st.slider("Pairs per round", 2, 30, 8, key="annotate-batch")
    who = st.text_input("Your name (recorded with each answer)", value="analyst", key="annotate-who")
    st.caption(f"Workspace: {markdown_code(workdir)}")

try:
    session = anneal.anneal_session(config, strategy, batch)
except TextITSRError as err:
    st.error(markdown_text(f"Cannot annotate this archive: {err}"))
    st.stop()

prog = session.progress()
pending = session.pending()
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
        st.markdown(f"**{title}** · {markdown_code(pair_id)}")
        left, right = st.columns(2)
        left.image(before, caption="before", width="stretch")
        right.image(after, caption="after", width="stretch")
        if record.get("captions"):
            st.caption(markdown_text(f"“{record['captions'][0]}”"))


if pending:
    a, b = pending[0]
    st.subheader(f"Is the change in A similar to the change in B?  ({len(pending)} left in this round)")
    with widgets.show_errors("The item pair"):
        col_a, col_b = st.columns(2, gap="large")
        show_item(col_a, a, "A")
        show_item(col_b, b, "B")
    # Similar and dissimilar look alike (no colour nudging the answer); skip is the quiet one.
    buttons = st.columns(3)
    for col, label, kind, icon in zip(
        buttons,
        ("similar", "dissimilar", "skip"),
        ("secondary", "secondary", "tertiary"),
        (":material/check:", ":material/close:", ":material/skip_next:"),
        strict=True,
    ):
        if col.button(label.capitalize(), key=f"annotate-{label}", type=kind, icon=icon, width="stretch"):
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
                st.error(markdown_text(err))
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
    with st.status("Updating the model…", expanded=True) as status:
        bar = st.progress(0.0, text="starting")
        steps: list[str] = []

        def report(fraction: float, message: str) -> None:
            """The bar follows every step; each named step (before the first ':') is listed once."""
            bar.progress(min(max(fraction, 0.0), 1.0), text=markdown_text(message))
            step = message.split(":")[0]
            if step != "done" and (not steps or steps[-1] != step):
                steps.append(step)
                status.update(label=markdown_text(f"Updating the model: {step}…"))
                st.caption(markdown_text(f"{len(steps)}. {step}"))

        try:
            metrics = session.update_model(report)
        except TextITSRError as err:
            status.update(label="Update failed", state="error")
            st.error(markdown_text(f"Update failed: {err}"))
            metrics = None
        else:
            status.update(label="Model updated", state="complete", expanded=False)
    if metrics is not None:
        using = archives.archive_choice(st.session_state) == archives.FINE_TUNED
        st.session_state[UPDATED_KEY] = (
            f"Fine-tuned on {int(metrics['n_labels'])} labels and re-embedded the archive. "
            + widgets.agreement_note(metrics) + " "
            + ("Search now uses the new model." if using
               else "Turn on “Use the fine-tuned model for search” to search with it.")
        )
        st.rerun()  # the sidebar and the switch below reflect the new model
if UPDATED_KEY in st.session_state:
    st.success(st.session_state.pop(UPDATED_KEY))


def _use_fine_tuned() -> None:
    chosen = archives.FINE_TUNED if st.session_state["annotate-use-tuned"] else archives.BASE
    archives.set_archive_choice(st.session_state, chosen)


tuned = archives.fine_tuned_store(config)
st.toggle(
    "Use the fine-tuned model for search",
    value=tuned is not None and archives.archive_choice(st.session_state) == archives.FINE_TUNED,
    key="annotate-use-tuned",
    on_change=_use_fine_tuned,
    disabled=tuned is None,
    help="Text search, map query and the inspector then rank pairs with the model fine-tuned on your "
    "answers (its re-embedded copy of the archive); off: the base model.",
)
active = archives.active_archive(config, st.session_state)
st.caption(
    f"Search uses the **{active.label}**."
    + ("" if tuned is not None else " Update the model first to search with a fine-tuned one.")
)

with widgets.show_errors("The metric over rounds"):
    history = session.history()
    names = {
        "pair_map20": "pair→pair mAP@20 (change type)",
        "text_mR": "text↔pair mR",
        "heldout_agreement": "agreement with held-out labels",
    }
    fig = go.Figure()
    for key, name in names.items():
        pts = [(h["round"], h[key]) for h in history if key in h]
        if pts:
            fig.add_scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=name)
    fig.update_layout(
        xaxis={"title": "round (0 = base model)", "dtick": 1, "tickformat": "d"},  # whole rounds only
        yaxis_title="%",
        height=360,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        title="Evaluation over rounds",
    )
    st.plotly_chart(fig, key="annotate-history", width="stretch")
