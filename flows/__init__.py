"""The flows. Importing them installs the Prefect event sink (:mod:`tasks.events`): every process that runs a
flow (a process worker's run, the warm worker, ``trader run``) tells Prefect what a trader should know."""

from tasks.events import install

install()
