"""The search server: a thin HTTP face (FastAPI) and a web page over a saved image index.

>>> from latentsearch.server.app import create_app
>>> app = create_app("photos.index")   # the run is the one the index records
>>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8000)

Modules: ``app`` (:func:`~latentsearch.server.app.create_app`: the parts put together),
``limits`` (:class:`~latentsearch.server.limits.ServeLimits`), ``service`` (the work without
HTTP, over a :class:`~latentsearch.Searcher`), ``routes`` (the API), ``middleware`` (upload
limit, ``Host`` check), ``files`` (checked file serving, re-encoding), ``errors`` (what the
service refuses), ``clusters`` (the cluster head's groups), ``schemas`` (the JSON bodies),
``running`` (uvicorn on a bound socket, in the foreground or a thread), ``static/`` (the page).
Nothing is imported here, so that the command line can read the limits without loading FastAPI.
"""
