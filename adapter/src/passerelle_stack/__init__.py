"""Operations tooling: builds the environments Triton needs, renders the profile's model
repository, builds the CPU profile's tiny models, and runs Triton + the adapter.

Used by `scripts/serve`, `scripts/test` and the test suite. Not imported by the adapter app.
"""
