"""The REST API's wiring: its URLs (one router over every app's viewsets, the schema, the docs page) and the
plumbing every endpoint shares (JSON parsing with bounds, paging, errors, the error responses in the schema).
The endpoints themselves live with their apps: ``rehearsals/api/`` and ``reports/api/``."""
