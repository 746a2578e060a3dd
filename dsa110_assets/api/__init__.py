"""The status API (FastAPI): pipeline status, streaming switch, data, mosaics, metrics.

``dsa110 serve`` runs it with uvicorn; :func:`dsa110_assets.api.app.create_app` builds it for
any settings and Dagster webserver. Nothing is re-exported here: importing this package (the
CLI imports :mod:`.dagster_client` to check ``--dagster-url``) must not import FastAPI, which
every ``dsa110`` command would then pay for.

Modules, one concept each: ``app`` (the factory), ``context`` (what handlers share),
``errors`` (failures as HTTP answers), ``inputs`` (request values checked), ``models``
(response bodies), ``queries`` (every SQL statement), ``backlog`` (the input folder),
``tiers`` (tier usage, measured at most every 30 s), ``metrics`` and ``prometheus``
(``/metrics``), ``mosaic_runs`` (a time range as daily mosaic runs), ``dagster_client``
(GraphQL), ``routers/`` (the routes by area).
"""
