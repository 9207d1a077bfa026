"""matplotlib without a screen: the one place that picks its backend, for every figure of the project."""


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (PNG files, no display), imported when a figure is first drawn:
    scripts that draw nothing never pay for matplotlib."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt
