"""Postgres as source and destination: schema, COPY load/export, atomic publish (SPEC §3, §6.7)."""
