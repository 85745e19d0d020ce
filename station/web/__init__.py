"""The station on the network: the status page, its JSON API and /metrics.

Served by uvicorn on the station's own event loop (``server``), so every view reads the same
immutable snapshots the OLED draws from, and an action is one ``Station.dispatch`` on the loop,
as a button press is. Parts: ``auth`` (who may act and see serials), ``views`` (the JSON of a
port, the records), ``feed`` (the live page's Server-Sent Events), ``metrics`` (Prometheus),
``certificate`` (the printable certificate), ``routes`` (the FastAPI app), ``static/`` (the page:
plain HTML, CSS and JavaScript shipped in the package; nothing is fetched at run time).
"""
