"""Quasi-static strain elastography: DP and CNN coarse displacement, GLUE, LSQ/Kalman strain.

Modules: :mod:`.bandpass` (zero-phase RF band-pass, as a scanner's receive chain), :mod:`.dp`
(Rivaz 2008 dynamic programming), :mod:`.glue` (Hashemi & Rivaz 2017), :mod:`.lsq`
(least-squares and Kalman strain), :mod:`.flownet` (compact flow CNN, GLUENet's coarse stage),
:mod:`.train` (training it on pairs with known displacement), :mod:`.pipeline` (the whole
chain), :mod:`.study` (scoring the failure-rate study of DP+GLUE vs CNN+GLUE) and :mod:`.pairs`
(what a pair must provide). Only :mod:`.runners` reads or writes stores and only
:mod:`.synthetic` calls the simulator (training pairs, validation pairs, the study's pairs).
"""
