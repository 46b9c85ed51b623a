"""Development-only code, apart from the runtime: the sample-data generator (`sample/`).

Nothing in scoring/, workers/, modal_burst/ or the local engine imports it; the `claidex`
command line does, for `claidex generate` and `claidex demo`."""
