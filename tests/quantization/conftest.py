"""The ``product`` fixture: each test runs on every recurrent product this CPU has."""
import pytest

from quantization_helpers import PRODUCTS


@pytest.fixture(params=PRODUCTS)
def product(request):
    return request.param
