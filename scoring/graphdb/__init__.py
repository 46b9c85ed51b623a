"""The ownership graph in Neo4j (SPEC §5): connection, loader, snapshot reader, live query."""
