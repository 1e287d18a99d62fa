"""The conformance suite over every registered mechanism: a new mechanism is tested by registering it."""

import pytest
import torch

import attnbench
from attnbench.conformance import CHECKS, CheckFailure
from tests.conftest import MECHANISMS


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("name", MECHANISMS)
def test_conformance(name, check):
    CHECKS[check](attnbench.get_mechanism(name))


@pytest.mark.parametrize("name", MECHANISMS)
def test_forward_backward_at_56(name):
    """Acceptance: builds from (dim, num_heads) alone, forward and backward on (2, 56, 56, 64)."""
    m = attnbench.build_mechanism(name, 64, 2)
    x = torch.randn(2, 56, 56, 64, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape
    y.mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_check_reports_fix_for_broken_mechanism(temp_registry):
    @attnbench.register_mechanism("_test_broken_shape")
    class Broken(attnbench.AttentionMechanism):
        def __init__(self, dim: int, num_heads: int) -> None:
            super().__init__(dim, num_heads)
            self.proj = torch.nn.Linear(dim, dim)

        def forward(self, x):
            return self.proj(x)[:, :-1]

    with pytest.raises(CheckFailure, match="channels-last"):
        CHECKS["shape"](Broken)


@pytest.mark.parametrize("name", MECHANISMS)
def test_wrong_input_is_refused_before_forward_naming_the_mechanism(name):
    m = attnbench.build_mechanism(name, 32, 2)
    with pytest.raises(
        ValueError, match=rf"\('{name}'\): expected a channels-last \(B, H, W, dim\) .* \(1, 28, 28, 33\)"
    ):
        m(torch.zeros(1, 28, 28, 33))


def test_input_check_runs_under_torch_compile():
    m = attnbench.build_mechanism("vanilla", 32, 2).eval()
    compiled = torch.compile(m, backend="eager")  # dynamo traces the pre-hook like forward
    x = torch.randn(1, 14, 14, 32)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), m(x))
        with pytest.raises(ValueError, match="expected a channels-last"):
            compiled(torch.randn(1, 14, 14, 33))
