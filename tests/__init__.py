"""The test suite: test modules, their shared fixtures (conftest) and the fakes they talk to."""
