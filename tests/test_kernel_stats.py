"""CPU test of scripts/kernel_stats.py's parsing of a ptxas -v log and a SASS listing (written by
hand below, in the formats CUDA 13's ptxas and cuobjdump print)."""

import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO_ROOT, "scripts", "kernel_stats.py")

PTXAS_LOG = """\
ptxas info    : Compiling entry function '_Z4histPj' for 'sm_90a'
ptxas info    : Function properties for _Z4histPj
    24 bytes stack frame, 60 bytes spill stores, 44 bytes spill loads
ptxas info    : Used 64 registers, used 1 barriers, 24 bytes cumulative stack size
ptxas info    : Compiling entry function '_Z4copyPf' for 'sm_90a'
ptxas info    : Function properties for _Z4copyPf
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 18 registers
"""

SASS = """\
        Function : _Z4histPj
        /*0000*/                   LDG.E.128 R4, desc[UR4][R2.64] ;   /* 0x0000000402047981 */
        /*0010*/                   ATOMS.ADD RZ, [R9+UR5], R12 ;      /* 0x0000000c09ff798c */
        /*0020*/                   ATOMS.POPC.INC.32 RZ, [R13+0x4000] ; /* 0x004000000dff7f8c */
        /*0030*/                   ATOMS.CAST.SPIN.64 R6, [R15], R4, R6 ; /* 0x000000040f06738d */
        /*0040*/                   STL [R1], R4 ;                     /* 0x0000000401007387 */
        /*0050*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;      /* 0x0000000000007b1d */
        /*0060*/                   EXIT ;                             /* 0x000000000000794d */
        Function : _Z4copyPf
        /*0000*/                   LDG.E R4, desc[UR4][R2.64] ;       /* 0x0000000402047981 */
        /*0010*/                   EXIT ;                             /* 0x000000000000794d */
"""


def run(tmp_path, pattern):
    log, sass = tmp_path / "ptxas.txt", tmp_path / "k.sass"
    log.write_text(PTXAS_LOG)
    sass.write_text(SASS)
    out = subprocess.run([sys.executable, SCRIPT, str(log), str(sass), pattern], capture_output=True, text=True,
                         check=True)
    return out.stdout.splitlines()


def test_rows_hold_ptxas_figures_and_sass_counts(tmp_path):
    lines = run(tmp_path, ".")
    assert lines[0] == ("| kernel | regs | stack | spill st | spill ld | ATOMS | CAS | LDL/STL | BAR | LDG | LDGSTS | LDS "
                        "| HMMA | instructions |")
    # hist: 2 shared atomics (ADD, POPC.INC), 1 CAS loop, 1 STL, 1 barrier, 1 LDG, 7 instructions.
    assert lines[2] == "| hist(unsigned int*) | 64 | 24 | 60 | 44 | 2 | 1 | 1 | 1 | 1 | 0 | 0 | 0 | 7 |"
    assert lines[3] == "| copy(float*) | 18 | 0 | 0 | 0 | 0 | 0 | 0 | 0 | 1 | 0 | 0 | 0 | 2 |"


def test_filter_keeps_matching_kernels_only(tmp_path):
    lines = run(tmp_path, "copy")
    assert len(lines) == 3 and lines[2].startswith("| copy(float*)")
