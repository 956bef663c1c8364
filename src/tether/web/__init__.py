"""The Services view: static pages whose scripts call the REST API, and the routes that serve
them and sign a browser in and out. No lifecycle rule lives here: the pages show what the API
answers, including which actions each instance allows now."""
