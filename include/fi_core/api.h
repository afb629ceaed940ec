// fi_core's C++ host API: the entry points behind the Python package, usable without Python.
// One header per kernel family; this one includes them all.
#pragma once

#include "fi_core/cascade.h"
#include "fi_core/core.h"
#include "fi_core/decode.h"
#include "fi_core/ops.h"
#include "fi_core/page.h"
#include "fi_core/prefill.h"
#include "fi_core/quantization.h"
#include "fi_core/sampling.h"
