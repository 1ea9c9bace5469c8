"""HTTP transport: connections, retries, error mapping and the SSE/NDJSON stream decoders."""
