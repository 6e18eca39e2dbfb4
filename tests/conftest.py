"""Minimal placeholder conftest (to be replaced by the real one).

Provides the ``engine`` fixture used by the differential tests.
"""

import pytest


@pytest.fixture(params=["python"])
def engine(request):
    return request.param
