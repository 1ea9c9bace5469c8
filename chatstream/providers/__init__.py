"""Chat model providers, one module each; import them by path (``chatstream.providers.fake``)."""
