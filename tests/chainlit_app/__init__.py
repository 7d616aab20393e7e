"""A real Chainlit 2.x app and a harness that runs it on loopback for the test suite."""
