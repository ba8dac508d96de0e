from nanoflow_jax.export import main

main()
