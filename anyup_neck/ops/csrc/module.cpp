// Python module stub: `import anyup_neck.ops._C` loads this library, whose static initialisers
// register the ops with torch.library. It defines no Python functions.
#include <Python.h>

extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
