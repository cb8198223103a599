"""Server scenario SUT: queries arrive one by one (Poisson); each is streamed by a worker.

The first generated token goes to LoadGen's FirstTokenComplete as soon as it exists and is
counted in the final response (the MLPerf reference drops it, which fails TEST06).
"""
from SUT_offline import SUT


class SUTServer(SUT):
    streaming = True
