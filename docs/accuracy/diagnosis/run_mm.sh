cd /tmp/diag
export TF_CPP_MIN_LOG_LEVEL=2
nice -n 10 .venv-tf2/bin/python launch/train.py --flagfile=launch/configs/fmnist_mixmatch.cfg --data_dir=/work/data --dataset=fashion_mnist.1@1000-5000 --seed=1 --model_dir=/tmp/mmA --train_steps=2100 --save_checkpoints_steps=300 --log_every_steps=100 > /tmp/mmA.log 2>&1
nice -n 10 .venv-tf2/bin/python launch/train.py --flagfile=launch/configs/fmnist_mixmatch.cfg --w_match=0 --data_dir=/work/data --dataset=fashion_mnist.1@1000-5000 --seed=1 --model_dir=/tmp/mmB --train_steps=2100 --save_checkpoints_steps=300 --log_every_steps=100 > /tmp/mmB.log 2>&1
