cd /tmp/diag
export TF_CPP_MIN_LOG_LEVEL=2
C="launch/configs/fmnist_mixmatch.cfg"
A="--data_dir=/work/data --dataset=fashion_mnist.1@1000-5000 --seed=1 --save_checkpoints_steps=300 --log_every_steps=100"
nice -n 10 .venv-tf2/bin/python launch/train.py --flagfile=$C --w_match=10 $A --model_dir=/tmp/mmC --train_steps=2100 > /tmp/mmC.log 2>&1
nice -n 10 .venv-tf2/bin/python launch/train.py --flagfile=$C $A --model_dir=/tmp/mmD --train_steps=300 > /tmp/mmD.log 2>&1
nice -n 10 .venv-tf2/bin/python launch/train.py --flagfile=$C --w_match=0 $A --model_dir=/tmp/mmE --train_steps=300 > /tmp/mmE.log 2>&1
