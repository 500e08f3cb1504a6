"""Apache TVM deployment of compressed models (Relax + our own compact TIR kernels)."""
