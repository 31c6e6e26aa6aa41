"""The JSON API under /api/v1: routes, bearer-token auth and the OpenAPI document."""
