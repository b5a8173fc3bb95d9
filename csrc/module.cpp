// rnnkit._C: a Python module with no functions of its own.  Importing it loads this library, whose
// static initialisers (TORCH_LIBRARY, TORCH_LIBRARY_IMPL) register the operators with PyTorch's
// dispatcher; they are then called as torch.ops.rnnkit.*.  Plain C API, no pybind11: nothing here
// needs it, and it keeps the build short.
#include <Python.h>

static struct PyModuleDef rnnkit_c_module = {
    PyModuleDef_HEAD_INIT,
    "_C",
    "rnnkit's C++ operators (torch.ops.rnnkit.*), registered when this module is imported.",
    -1,
    nullptr,
};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&rnnkit_c_module); }
