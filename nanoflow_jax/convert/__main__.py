from nanoflow_jax.convert import main

main()
