"""Sample generation: Pythia 8 signal and backgrounds with a fast detector response.

The files written here have the same layout as the scouting ntuples the processors read
(see :mod:`svjscout.processors.schema`), so the whole chain can be run offline.

* :mod:`svjscout.samples.processes` -- the Pythia 8 settings of every process, documented
* :mod:`svjscout.samples.detector`  -- the fast detector response (particles -> PF candidates, MET)
* :mod:`svjscout.samples.generate`  -- the event loop, pileup, detector copies, chunking, parallel
  workers, ROOT writing
* :mod:`svjscout.samples.skim`      -- lossless skims (any event subset), the Runs tree kept (the
  preselection skim, decided by the processor itself, is :mod:`svjscout.jobs.commands_skim`)
* :mod:`svjscout.samples.embedded`  -- the small sample shipped in the repository
"""
