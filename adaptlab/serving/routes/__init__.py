"""The HTTP routes, one router per concern; :func:`adaptlab.serving.app.create_app` attaches them."""
