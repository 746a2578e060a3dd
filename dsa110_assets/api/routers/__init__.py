"""The API's routes, one module per area: status, streaming, data, mosaic, metrics."""
