"""
Clear errors for the :class:`torch.distributions.Distribution` members that a distribution over
spike trains does not have (torch raises a bare :class:`NotImplementedError` for them).
"""

__all__ = ["NoMoments"]

_COMMON = {
    "mean": (
        "the mean of a spike train in the padded events layout is not meaningful (rows are "
        "sorted times, padded with T)",
        "summarise samples instead: pyro_spikes.spikes.num_spikes(process.sample((n,))) for "
        "counts, or process.intensity(events, t) / process.compensator(events) for rates",
    ),
    "mode": (
        "no mode is available",
        "draw samples with .sample() and score them with .log_prob()",
    ),
    "variance": (
        "the variance of a spike train in the padded events layout is not meaningful",
        "use the spread of sample statistics, e.g. num_spikes(process.sample((n,))).var(0)",
    ),
    "stddev": (
        "the standard deviation of a spike train in the padded events layout is not meaningful",
        "use the spread of sample statistics, e.g. num_spikes(process.sample((n,))).std(0)",
    ),
    "entropy": (
        "the entropy has no closed form",
        "estimate it by Monte Carlo: -process.log_prob(process.sample((n,))).mean()",
    ),
    "cdf": (
        "a multivariate point process has no cumulative distribution function",
        "use process.compensator(events) (time rescaling, see "
        "pyro_spikes.diagnostics.rescaled_intervals)",
    ),
    "icdf": (
        "a multivariate point process has no inverse cumulative distribution function",
        "draw samples with .sample()",
    ),
    "enumerate_support": (
        "the support (all spike trains on [0, T]) is infinite and cannot be enumerated",
        "sample it, or use a continuous relaxation (RelaxedPointProcess)",
    ),
}


def _unavailable(dist, name, extra=None):
    what, instead = dict(_COMMON, **(extra or {}))[name]
    return NotImplementedError(f"{type(dist).__name__}.{name}: {what}; {instead}")


class NoMoments:
    """
    Mixin giving :class:`NotImplementedError` messages that say what is not available and what
    to use instead. A class may override or add entries in ``_unavailable_hints``:
    ``{name: (what, instead)}``.
    """

    _unavailable_hints = {}

    @property
    def mean(self):
        raise _unavailable(self, "mean", self._unavailable_hints)

    @property
    def mode(self):
        raise _unavailable(self, "mode", self._unavailable_hints)

    @property
    def variance(self):
        raise _unavailable(self, "variance", self._unavailable_hints)

    @property
    def stddev(self):
        raise _unavailable(self, "stddev", self._unavailable_hints)

    def entropy(self):
        raise _unavailable(self, "entropy", self._unavailable_hints)

    def cdf(self, value):
        raise _unavailable(self, "cdf", self._unavailable_hints)

    def icdf(self, value):
        raise _unavailable(self, "icdf", self._unavailable_hints)

    def enumerate_support(self, expand=True):  # pragma: no mutate (torch's signature)
        raise _unavailable(self, "enumerate_support", self._unavailable_hints)
