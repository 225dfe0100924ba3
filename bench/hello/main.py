"""A bare functions-framework function: the cold-start baseline of `make bench`."""

import flask
import functions_framework


@functions_framework.http
def hello(request: flask.Request) -> str:
    """Any method: 200 with "ok"."""
    return "ok"
