"""Persistence: SQLAlchemy models, the engine, and small stores for each table."""
