"""matplotlib without a screen: the one place that picks its backend, for every figure of the project."""


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (PNG files, no display), imported when a figure is first drawn:
    scripts that draw nothing never pay for matplotlib. Its INFO messages (the font cache it builds on a fresh
    machine) stay out of the scripts' output, where absl shows INFO logs."""
    import logging

    import matplotlib
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt
