"""The live console at `/console`: one static page (HTML, CSS and plain JavaScript, no
build step) served by the service, that talks to the public API with a pasted token."""
