"""Run machinery: the run store (all run-directory I/O), plan, ledger, manifest, retries."""
