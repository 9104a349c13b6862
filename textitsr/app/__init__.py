"""Streamlit helpers the pages share, one job per module.

- `config`: the app's settings from TEXTITSR_* environment variables.
- `archives`: which archive the pages search (base or ANNEAL fine-tuned).
- `services`: that archive's `SearchService`, opened once per process.
- `archive_writes`: scenes and map tiles written into the base archive.
- `map_layers`: the base archive's map layers, published once per archive state.
- `thumbnails`: pairs' thumbnails as JPEG bytes, cached.
- `anneal`: the ANNEAL session the Annotate page drives.
- `map_assets`: Leaflet and plugin files served locally.
- `uploads`: typed scene paths and uploaded GeoTIFFs, checked before anything is written.
- `filters`: the search pages' widgets -> `SearchFilters`.
- `footprints`: pair footprints as geometry: hit tests, bounds, areas.
- `map_events`: what a click or a drawn rectangle on the map picked.
- `maps`: `ArchiveMap`, the Leaflet map of an archive.
- `figures`: plotly charts and images (scores, difference).
- `compare`: the swipe/blink viewer, run in the browser (nothing sent back on a drag or blink).
- `inspector`: the Inspector page's parts (facts line, views with the difference drawn on demand).
- `widgets`: Streamlit building blocks (page set-up, error boxes, result cards).
- `navigation`: the pages/ scripts as st.navigation entries.

Nothing here holds model or search logic: the pages reach the archive through
`textitsr.service.SearchService`.
"""
