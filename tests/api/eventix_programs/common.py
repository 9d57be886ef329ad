"""Point Eventix's client at the test server, with the bearer token."""

import os

from eventix.functions.eventix_client import EventixClient


def configure() -> None:
    EventixClient.config({})  # EVENTIX_URL and EVENTIX_NAMESPACE from the environment
    EventixClient.interface.base_headers["Authorization"] = "Bearer " + os.environ["TEST_TOKEN"]
