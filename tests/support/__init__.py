"""What the tests and the benches share: the fake model server, the app under Hypercorn, and the
request helpers."""

# Every test's htmx request carries this header, as htmx's own requests do.
HTMX = {"HX-Request": "true"}
