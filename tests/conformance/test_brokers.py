"""The conformance suite for every broker of the registry and each of its implementations, each started
by the local launcher (embedded transports: nothing to start). ``-k`` picks one, e.g. ``-k Redis``."""
from tests.conformance.suite import BrokerConformance, cases, class_name

for _broker, _impl in cases():
    _name = class_name("Test", _broker, _impl)
    globals()[_name] = type(_name, (BrokerConformance,), {"broker": _broker, "broker_impl": _impl,
                                                          "launcher": "local", "__module__": __name__})
