"""The search server: a thin HTTP face (FastAPI) and a web page over a saved image index.

>>> from latentsearch.server.app import create_app
>>> app = create_app("photos.index")   # the run is the one the index records
>>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8000)

Modules: ``app`` (the routes and :func:`~latentsearch.server.app.create_app`), ``schemas``
(the JSON bodies), ``limits`` (default limits), ``running`` (uvicorn on a bound socket, in the
foreground or a thread), ``static/`` (the page). Nothing is imported here, so that the
command line can read the limits without loading FastAPI.
"""
