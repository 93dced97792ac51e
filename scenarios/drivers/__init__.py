"""Hardware behind the ``Cell`` protocol: robot and camera drivers, the hardware cell that
composes them with the twin renderer, and the replay cell that plays a recorded run back.

Each driver module imports its SDK only inside itself (``base.import_sdk``), so twincell
installs and runs without any of them; a scenario that names a missing one is refused with
one line saying what to install.
"""
