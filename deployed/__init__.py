"""The real template, built by `sam build` and deployed by `sam deploy`, onto MiniStack.

`python -m deployed` (what `make test-deployed` runs) starts MiniStack on 127.0.0.1, builds
template.yaml for this machine's architecture, applies the MiniStack-only workarounds of
`deployed.ministack_compat` to a copy of the built template, deploys it, loads the sample
store master and runs the end-to-end tests against the deployed API. See docs/deployed.md.
"""
