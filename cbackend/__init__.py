"""The C backend: the Crystal as self-contained C99 (float32, and the fixed-point integer
nets bit-exact with the golden model), compiled with the system C compiler through the one
tool runner, loaded with ctypes, and benchmarked against torch and numpy.

    emit.py    the C source and header of each variant (readable: one neuron per comment)
    build.py   cc through crystalbench.toolrun, `size` of the object, ctypes loading
    bench.py   latency (batch 1) and throughput (batch 1,024): interleaved repeats, medians
    flow.py    the `compile-c` stage: build/<exp>/c/

Imports core and rtl (the fixed-point formats) only; never torch: the torch side of the
benchmark is crystalbench.model.infer, handed in by the CLI.
"""

from crystalbench.errors import CBackendError  # noqa: F401 (the package's error, imported from here)


