"""HTTP layer: dependencies and routes. Routes stay short and call services."""
