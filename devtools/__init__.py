"""Tools for developing Daifuku, shared by the test suite and the bench; not part of the service."""
