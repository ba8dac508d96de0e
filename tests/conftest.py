import os

# fake CPU devices for data-parallel tests; must be set before JAX starts
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

DATA = os.path.join(os.path.dirname(__file__), "data")
