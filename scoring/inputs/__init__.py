"""The input contract (SPEC §3), the NPI rule, quarantine and the one validation path."""
