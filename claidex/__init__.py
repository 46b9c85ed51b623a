"""Claidex command line, local engine and sample-data generator."""
