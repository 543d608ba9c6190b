"""`python -m retail_pulse_client`: the same as the `retail-pulse` console script."""

from retail_pulse_client.cli import main

main()
