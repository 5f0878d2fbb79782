"""The Slurm backend: each TAO job is a Slurm batch job (sbatch), launched on the node by pyxis/enroot, docker, or
TAO's Python package (runners/slurm/launch.py)."""
