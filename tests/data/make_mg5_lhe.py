"""Re-dress hard events of `rs3l generate` (top, t -> b q q') as a MadGraph5_aMC@NLO-style LHE file.

Written once to produce tests/data/mg5_ttbar.lhe (kept in the repository):

    rs3l generate --config config/config.yaml --process top --events 40 --out /tmp/top40.lhe
    python tests/data/make_mg5_lhe.py /tmp/top40.lhe tests/data/mg5_ttbar.lhe

The kinematics are Pythia's (so jets exist after re-simulation); the dressing is what MG5_aMC
writes: a banner comment, <MGVersion>, <MG5ProcCard>/<MGRunCard> in CDATA, <initrwgt> weight
groups, two processes in <init> (gg -> tt~ as 1, qq~ -> tt~ as 2) with a <generator> tag, IDWTUP
-4, non-unit event weights, `#aMCatNLO` comment lines, <mgrwt> and <rwgt> blocks per event.
"""

import sys

import numpy as np

from rs3l.physics import lhe

HEADER = """<LesHouchesEvents version="3.0">
<header>
<!--
#*********************************************************************
#                                                                    *
#                        MadGraph5_aMC@NLO                           *
#                                                                    *
#    The MadGraph5_aMC@NLO Development Team - Find us at             *
#    http://madgraph.phys.ucl.ac.be/  and  http://amcatnlo.cern.ch   *
#*********************************************************************
-->
<MGVersion>
3.5.3
</MGVersion>
<MG5ProcCard>
<![CDATA[
import model loop_sm-no_b_mass
define p = g u c d s u~ c~ d~ s~ b b~
generate p p > t t~ [QCD]
output ttbar_NLO
]]>
</MG5ProcCard>
<MGRunCard>
<![CDATA[
  -1 = nevents ! Number of unweighted events requested
  13000.0 = sqrts ! 6500 GeV per beam
  400.0 = ptj ! minimum pt of the tops (matches rs3l's pTHatMin)
  True = store_rwgt_info
]]>
</MGRunCard>
<initrwgt>
<weightgroup name="scale_variation" combine="envelope">
<weight id="1001"> dyn=  -1 muR=0.10000E+01 muF=0.10000E+01 </weight>
<weight id="1002"> dyn=  -1 muR=0.20000E+01 muF=0.10000E+01 </weight>
<weight id="1003"> dyn=  -1 muR=0.50000E+00 muF=0.10000E+01 </weight>
</weightgroup>
<weightgroup name="PDF4LHC15_nlo_30_pdfas" combine="hessian">
<weight id="2001"> PDF=  90000 PDF4LHC15_nlo_30_pdfas </weight>
</weightgroup>
</initrwgt>
</header>
<init>
2212 2212 +6.5000000000e+03 +6.5000000000e+03 0 0 90000 90000 -4 2
+6.6431000000e-01 +2.1300000000e-03 +6.6431000000e-01 1
+1.2104000000e-01 +6.1000000000e-04 +1.2104000000e-01 2
<generator name='MadGraph5_aMC@NLO' version='3.5.3'>please cite 1405.0301 </generator>
</init>
"""


def main(src: str, out: str) -> None:
    events = lhe.read(src)
    rng = np.random.default_rng(11)
    lines = [HEADER]
    for i in range(len(events)):
        prt = events.particles[i]
        rows = np.stack([np.asarray(prt[c], dtype=np.float64) for c in lhe.LHE_COLUMNS], axis=1)
        gluons = rows[0, 0] == 21 and rows[1, 0] == 21
        weight = (0.66431 if gluons else 0.12104) * rng.uniform(0.6, 1.4)
        scale = float(events.scale[i])
        lines.append(f"<event>\n {len(rows)} {1 if gluons else 2} {weight:+.7e} {scale:.8e} 7.546771e-03 1.102e-01\n")
        for r in rows:
            lines.append("      %d %2d %4d %4d %4d %4d %+.10e %+.10e %+.10e %.10e %.10e %.4e %.4e\n" % tuple(r))
        lines.append(f"#aMCatNLO 2 5 3 3 1 0.{i + 10:02d}E+03 0.15E+03 9 0 0 0.99E+00 0.69E+00 0.10E+01 0.00E+00 0.00E+00\n")
        if i % 7 == 3:
            lines.append("# a comment line written by a later tool\n")
        lines.append(f"<mgrwt>\n<rscale>  2 {scale:.5E}</rscale>\n<asrwt>0</asrwt>\n"
                     f"<pdfrwt beam=\"1\">  1 {int(rows[0, 0]):8d} {abs(rows[0, 8]) / 6500:.5E} {scale:.5E}</pdfrwt>\n"
                     f"<pdfrwt beam=\"2\">  1 {int(rows[1, 0]):8d} {abs(rows[1, 8]) / 6500:.5E} {scale:.5E}</pdfrwt>\n"
                     f"<totfact> {weight:+.5E}</totfact>\n</mgrwt>\n")
        lines.append("<rwgt>\n" + "".join(f"<wgt id='{k}'> {weight * f:+.5e} </wgt>\n"
                                          for k, f in (("1001", 1.0), ("1002", 0.88), ("1003", 1.17), ("2001", 1.02)))
                     + "</rwgt>\n</event>\n")
    lines.append("</LesHouchesEvents>\n")
    with open(out, "w") as fh:
        fh.write("".join(lines))


if __name__ == "__main__":
    main(*sys.argv[1:3])
