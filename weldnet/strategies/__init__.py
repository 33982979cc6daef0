"""The strategy axes: losses, samplers, selective under-sampling, initialisation, networks and decision rules."""
