"""The API's routes, one module per resource; api/app.py includes them in this order."""
